"""``python -m devtools.workflows [--check] [--out DIR] [--comfyui DIR]``: write (or check) the shipped workflow
JSON files."""

import sys

from .build import main

sys.exit(main())
