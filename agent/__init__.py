"""A LiveKit Agents voice worker that plays a scenario persona and delivers its transcript."""
