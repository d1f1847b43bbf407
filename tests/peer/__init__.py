"""dicomweb-client's own tests against `aiodicomweb.compat` (opt-in: run_peer_suite.py)."""
