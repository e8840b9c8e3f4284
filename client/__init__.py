"""`pvesphere`: the user's command-line client of the coordinator's REST API.

Everything it does goes over the API (HTTP and the WebSocket events stream), as any
script would; it imports nothing of the coordinator or the agent, so that it installs
and runs on a workstation that has neither.
"""
