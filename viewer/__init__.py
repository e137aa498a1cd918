"""A command-line WebRTC viewer: opens a session through the core and decodes the camera's video."""
