"""L2TP (RFC 2661) as a sans-IO core: LNS for dial-in clients, LAC for branch routers."""
