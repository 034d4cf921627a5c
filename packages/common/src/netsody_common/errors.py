"""The exception tree of `netsody_common`.

Every error the library raises on purpose derives from `NetsodyError`, so a caller can catch the
library's failures without catching programming errors. Modules define their own subclasses
(`IdentityError`, `DocumentError`) beside the code that raises them.
"""


class NetsodyError(Exception):
    """Base class of every error raised by `netsody_common`."""
