"""CRM backends behind one protocol: the embedded SQLite CRM, and real CRMs."""
