import sys

from ryzq.cli import main

sys.exit(main())
