"""Test doubles shipped with the package so the test suite and the benchmarks share them.

Import them from their modules (``segment_profiles_pipeline.testing.segment_server``): re-exporting
here would import the server module twice when it runs as ``python -m``.
"""
