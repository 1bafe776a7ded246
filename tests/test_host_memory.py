"""jaxsbert.host_memory: importing jaxsbert switches glibc to keep freed memory, unless opted out."""
import os
import platform
import subprocess
import sys

import pytest

PROBE = "import jaxsbert, jaxsbert.host_memory as h; print(h._applied)"


def _probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
def test_import_applies_the_allocator_settings():
    assert _probe() == "True"


def test_opt_out_leaves_the_allocator_alone():
    assert _probe(JAXSBERT_KEEP_HOST_MEMORY="0") == "False"
