"""Stand-in: the transformers sdist does not ship `tests/exporters/test_export.py`, so no export test runs."""


class ExportTesterMixin:
    """Empty: the export tests live in the file the sdist leaves out."""
