"""`python -m cloudml.cluster.manifests [ROOT]`: see cloudml.cluster.manifests.runner.main."""

import sys

from cloudml.cluster.manifests.runner import main

sys.exit(main())
