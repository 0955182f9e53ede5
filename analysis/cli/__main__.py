import sys

from offramp.analysis.cli import main

sys.exit(main())
