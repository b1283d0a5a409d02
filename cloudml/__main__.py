import sys

from cloudml.cli import main

sys.exit(main())
