"""The MCP authorization gateway (DESIGN flow B): configuration, resource-server duties,
authorization of MCP messages, upstream credentials. HTTP lives in ``tessera.http.gateway``.
"""
