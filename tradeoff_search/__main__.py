import sys

from tradeoff_search.cli import main

sys.exit(main())
