"""ASGI app and routers; the only place errors become wire formats."""
