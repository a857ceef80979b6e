"""Values that go into email headers: no CR/LF (header injection) and only real addresses.

Names, subjects and addresses in our mail come partly from tenants' data (a contact's traits, a
workspace name, a founder's template), so they are cleaned here before they reach a header.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# CR, LF, NUL and the other C0/C1 controls, plus Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def header_value(text: str, *, max_length: int = 255) -> str:
    """`text` as a single-line header value: control characters become one space."""
    return " ".join(_CONTROL.sub(" ", text).split())[:max_length]


def is_deliverable_address(address: str) -> bool:
    """True for one plain address with no header tricks (CR/LF, commas, display names)."""
    if not address or _CONTROL.search(address) or len(address) > 254:
        return False
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True
