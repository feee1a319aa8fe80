"""3-D on the web page: uploaded volumes (:mod:`.store`), their routes, and the routes of the
interactive 3-D session (:mod:`msagent.volume.session` mapped to HTTP)."""
