"""``python -m msagent``: the command line, the same as the ``msagent`` script."""

from msagent.cli import main

raise SystemExit(main())
