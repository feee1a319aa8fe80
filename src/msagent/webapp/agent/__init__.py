"""Agent runs on the web page: the run route, the policy pool, finished runs, take-over and
the streamed turns."""
