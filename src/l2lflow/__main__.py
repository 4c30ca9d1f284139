import sys

from l2lflow.cli import main

sys.exit(main())
