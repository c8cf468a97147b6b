"""A VPN gateway appliance: IKE, ESP/AH, L2TP/PPP, policy, metrics."""

__version__ = "0.1.0"
