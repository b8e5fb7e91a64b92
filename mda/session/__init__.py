"""The LMTP/SMTP session: a sans-I/O core (``core``, ``data``, ``proxy``) and its asyncio transport."""
