"""The per-node agent: health, uploads, validation, local import and peer-to-peer streaming."""
