"""The small runtime every service shares: settings, logging, the error model,
gRPC server bootstrap and channel factory. No service logic lives here."""
