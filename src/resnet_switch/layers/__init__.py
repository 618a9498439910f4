from . import (
    scale_conv,  # noqa: F401  (registers the "san" and "private_conv" layer factories)
    slimmable,  # noqa: F401  (registers the "slimmable" layer factory)
)
