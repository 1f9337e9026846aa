"""The e2e job's reading of `icacls /save` output, on samples of what icacls writes."""

from tests.windows_ci.acl import dacl_entries

SID = "S-1-5-21-1004336348-1177238915-682003330-1001"


def test_a_key_locked_to_one_user() -> None:
    assert dacl_entries(f"D:PAI(A;;FA;;;{SID})") == ("PAI", [("A", "FA", SID)])


def test_an_inherited_acl_shows_every_entry_and_no_protection() -> None:
    sddl = f"D:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;FA;;;{SID})"
    flags, entries = dacl_entries(sddl)
    assert "P" not in flags
    assert [sid for _, _, sid in entries] == ["SY", "BA", SID]


def test_no_dacl() -> None:
    assert dacl_entries("O:BAG:SY") == ("", [])
