"""``python -m pavi_parcel.cli``: the ``pavi-parcel`` command."""

import sys

from .app import main

sys.exit(main())
