"""Regenerate edge/manifest.schema.json from the manifest's typed records (tests fail while it is stale).

    python scripts/write_manifest_schema.py
"""

import json

from edgemed.manifest import SCHEMA_FILE, json_schema

SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2) + "\n")
print(SCHEMA_FILE)
