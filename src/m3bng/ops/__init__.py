"""Operations: what the ops API, the CLI and the dashboard do to the store (search, replay,
pause, alerts, retention). HTTP lives in ``m3bng.api.ops``; the logic lives here."""
