"""L2TP/IPsec dial-up: the LNS for dial-in users and the LAC for branch routers."""
