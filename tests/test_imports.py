"""pytest imports the plugin on every run of every project: it must stay light."""

from __future__ import annotations

import subprocess
import sys


def test_package_and_plugin_import_no_heavy_modules() -> None:
    code = (
        "import sys, templatecheck, templatecheck.plugin, templatecheck.cli, templatecheck.checks.template, "
        "templatecheck.checks.tokenizer, templatecheck.checks.reference, templatecheck.formats.detect\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'tokenizers', 'huggingface_hub', 'numpy', "
        "'mistral_common', 'sentencepiece') "
        "if m in sys.modules)\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
