-- Web status pages (issue 6): the 1-minute load average a worker last sent in a heartbeat.
-- NULL until a worker that reports it heart-beats (older workers never do).
ALTER TABLE workers ADD COLUMN load_1min REAL;
