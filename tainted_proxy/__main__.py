import sys

from tainted_proxy.cli import main

sys.exit(main())
