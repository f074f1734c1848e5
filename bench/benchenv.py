"""Environment every benchmark needs: a throwaway key for the base CRM's encrypted fields."""

import base64
import os

os.environ.setdefault("CRM_ENCRYPTION_KEYS", "bench:" + base64.b64encode(os.urandom(32)).decode())
