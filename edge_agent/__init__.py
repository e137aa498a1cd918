"""The district edge agent: proxies RTSP cameras over WebRTC and reports status over MQTT."""
