"""The read side: saved reports, checked ad-hoc SQL, traces, journeys and alerts."""
