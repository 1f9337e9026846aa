"""Reading an ACL as `icacls FILE /save ACLFILE` writes it: one line with the file's name, one
with its security descriptor in SDDL (e.g. `D:PAI(A;;FA;;;S-1-5-21-...)`)."""

import re

__all__ = ["dacl_entries"]


def dacl_entries(sddl: str) -> tuple[str, list[tuple[str, str, str]]]:
    """The DACL's flags ("P": protected, inherits nothing) and its entries as (type, rights,
    SID): `A`llow, `FA` (file all access), `S-1-...`."""
    match = re.search(r"D:([A-Z]*)((?:\([^)]*\))*)", sddl)
    if match is None:
        return "", []
    entries = []
    for entry in re.findall(r"\(([^)]*)\)", match.group(2)):
        fields = entry.split(";")
        if len(fields) >= 6:
            entries.append((fields[0], fields[2], fields[5]))
    return match.group(1), entries
