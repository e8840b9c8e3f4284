"""The agent's HTTP handlers, one module per resource; agent/server.py wires them up.

health.py (/health, /v1/whoami), uploads.py (an upload streamed into staging, removing
what is staged), staging.py (what staging holds), imports.py, vms.py; the transfer routes
are agent/transfer/routes.py. Each decodes its request into its message (shared/messages/)
and answers with one (responses.py).
"""
