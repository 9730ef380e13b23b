import sys

from tradeoff_search._cli import main

sys.exit(main())
