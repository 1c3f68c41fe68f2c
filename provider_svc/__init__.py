"""provider_svc: the only holder of upstream credentials.

One adapter per upstream family turns the normalised request into the upstream's
body, and the upstream's answer into normalised images, usage and flags.
"""
