"""The operator's view of many devices (`edge fleet ls|watch`), from the MQTT topics devices retain."""
