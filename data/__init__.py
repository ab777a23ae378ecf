"""The definitions that ship with radassets: installed as the package ``radassets.data``.

Not code: this file makes ``data/`` a package so that a wheel can carry ``datasets/``, ``models/``
and ``reference/`` (setup.py maps ``radassets.data`` onto this folder). ``radassets/packaged.py``
is the one place that finds them at run time.
"""
