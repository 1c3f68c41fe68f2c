"""The `quantized` command: serve one service, run the dev stack, administer a deployment."""
