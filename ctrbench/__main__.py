import sys

from ctrbench.app.cli import main

sys.exit(main())
