"""Reliability harnesses (issue 13): real `radassets` processes killed and rerun, and run side by side.

Slow (minutes): marked ``reliability``, left out of ``make test`` and run by ``make test-reliability`` (CI).
"""
