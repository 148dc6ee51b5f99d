import sys

from dnarch.cli import main

sys.exit(main())
