"""Configuration profile packages: signed, versioned configuration for a vehicle group and hardware."""
