"""`ssl` deferred until used: each check runs in a fresh interpreter, where
nothing has imported `ssl` yet (this one has, through pytest's plugins)."""

import ssl
import subprocess
import sys
import textwrap

from tailscale_wsl2.tuning import deferred_ssl


def run_fresh(code: str) -> str:
    """Run `code` in a new interpreter where the entry point has deferred `ssl`; its output."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tailscale_wsl2.tuning.deferred_ssl import defer_ssl\ndefer_ssl()\n"
            + textwrap.dedent(code),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def test_importing_trio_leaves_openssl_unloaded() -> None:
    printed = run_fresh("""
        import sys
        import trio
        print("_ssl" in sys.modules, type(sys.modules["ssl"]).__name__)
    """)
    assert printed == "False _DeferredModule"


def test_the_first_use_loads_the_real_module_for_everyone() -> None:
    printed = run_fresh("""
        import sys
        import trio._ssl
        import ssl
        context = ssl.create_default_context()
        print(
            "_ssl" in sys.modules,
            isinstance(context, sys.modules["ssl"].SSLContext),
            trio._ssl._stdlib_ssl.SSLError is sys.modules["ssl"].SSLError,
        )
    """)
    assert printed == "True True True"


def test_a_name_ssl_lacks_is_an_attribute_error() -> None:
    printed = run_fresh("""
        import ssl
        print(hasattr(ssl, "no_such_thing"), hasattr(ssl, "PROTOCOL_TLS_CLIENT"))
    """)
    assert printed == "False True"


def test_a_load_that_fails_leaves_the_stand_in_for_the_next_try() -> None:
    printed = run_fresh("""
        import sys
        stand_in = sys.modules["ssl"]
        sys.modules["_ssl"] = None  # OpenSSL cannot be loaded
        try:
            stand_in.SSLContext
        except ImportError:
            print("ImportError", sys.modules["ssl"] is stand_in, end=" ")
        del sys.modules["_ssl"]
        print(stand_in.SSLContext.__name__)
    """)
    assert printed == "ImportError True SSLContext"


def test_an_ssl_imported_already_is_left_alone() -> None:
    deferred_ssl.defer_ssl()
    assert sys.modules["ssl"] is ssl
