import sys

from eltmake.cli import main

sys.exit(main())
