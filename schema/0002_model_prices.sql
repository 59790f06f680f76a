-- pgtrail 0002: model list prices, used to infer cost when a caller gives tokens but no cost.
--
-- Prices are USD per million tokens. A model name matches a row when it equals `model` or
-- matches `match_pattern` (a case-insensitive POSIX regular expression, so dated snapshots
-- such as claude-sonnet-4-20250514 find their family). The row whose validity covers the
-- call's created_at wins; among several, the longest `model` name (the most specific).
-- The table is yours: add rows for your negotiated prices, or close a row with valid_to.

CREATE TABLE pgtrail_model_price (
    model                  text    NOT NULL,
    provider               text    NOT NULL,
    match_pattern          text    NOT NULL,
    input_per_mtok         numeric NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok        numeric NOT NULL CHECK (output_per_mtok >= 0),
    cached_input_per_mtok  numeric CHECK (cached_input_per_mtok >= 0),
    valid_from             date    NOT NULL DEFAULT DATE '2000-01-01',
    valid_to               date,
    PRIMARY KEY (model, valid_from),
    CHECK (valid_to IS NULL OR valid_to > valid_from)
);

INSERT INTO pgtrail_model_price
    (model, provider, match_pattern, input_per_mtok, output_per_mtok, cached_input_per_mtok, valid_from, valid_to)
VALUES
    -- Anthropic
    ('claude-opus-4-5',    'anthropic', '^claude-opus-4-5',                  5.00,  25.00, 0.50,  '2025-11-24', NULL),
    ('claude-opus-4-1',    'anthropic', '^claude-opus-4-1',                 15.00,  75.00, 1.50,  '2025-08-05', NULL),
    ('claude-opus-4',      'anthropic', '^claude-opus-4(-[0-9]{8})?$',      15.00,  75.00, 1.50,  '2025-05-22', NULL),
    ('claude-sonnet-4-5',  'anthropic', '^claude-sonnet-4-5',                3.00,  15.00, 0.30,  '2025-09-29', NULL),
    ('claude-sonnet-4',    'anthropic', '^claude-sonnet-4(-[0-9]{8})?$',     3.00,  15.00, 0.30,  '2025-05-22', NULL),
    ('claude-haiku-4-5',   'anthropic', '^claude-haiku-4-5',                 1.00,   5.00, 0.10,  '2025-10-15', NULL),
    ('claude-3-7-sonnet',  'anthropic', '^claude-3-7-sonnet',                3.00,  15.00, 0.30,  '2025-02-24', NULL),
    ('claude-3-5-sonnet',  'anthropic', '^claude-3-5-sonnet',                3.00,  15.00, 0.30,  '2024-06-20', NULL),
    ('claude-3-5-haiku',   'anthropic', '^claude-3-5-haiku',                 0.80,   4.00, 0.08,  '2024-11-04', NULL),
    ('claude-3-opus',      'anthropic', '^claude-3-opus',                   15.00,  75.00, 1.50,  '2024-03-04', NULL),
    ('claude-3-haiku',     'anthropic', '^claude-3-haiku',                   0.25,   1.25, 0.03,  '2024-03-13', NULL),
    -- OpenAI
    ('gpt-5',              'openai',    '^gpt-5(-[0-9]{4}-[0-9]{2}-[0-9]{2})?$', 1.25, 10.00, 0.125, '2025-08-07', NULL),
    ('gpt-5-mini',         'openai',    '^gpt-5-mini',                       0.25,   2.00, 0.025, '2025-08-07', NULL),
    ('gpt-5-nano',         'openai',    '^gpt-5-nano',                       0.05,   0.40, 0.005, '2025-08-07', NULL),
    ('gpt-4.1',            'openai',    '^gpt-4\.1(-[0-9]{4}-[0-9]{2}-[0-9]{2})?$', 2.00, 8.00, 0.50, '2025-04-14', NULL),
    ('gpt-4.1-mini',       'openai',    '^gpt-4\.1-mini',                    0.40,   1.60, 0.10,  '2025-04-14', NULL),
    ('gpt-4.1-nano',       'openai',    '^gpt-4\.1-nano',                    0.10,   0.40, 0.025, '2025-04-14', NULL),
    ('gpt-4o',             'openai',    '^(openai/)?gpt-4o(-[0-9]{4}-[0-9]{2}-[0-9]{2})?$', 2.50, 10.00, 1.25, '2024-08-06', NULL),
    ('gpt-4o-mini',        'openai',    '^gpt-4o-mini',                      0.15,   0.60, 0.075, '2024-07-18', NULL),
    ('o1',                 'openai',    '^o1(-[0-9]{4}-[0-9]{2}-[0-9]{2})?$', 15.00, 60.00, 7.50,  '2024-12-17', NULL),
    ('o3',                 'openai',    '^o3(-[0-9]{4}-[0-9]{2}-[0-9]{2})?$', 10.00, 40.00, 2.50,  '2025-04-16', '2025-06-10'),
    ('o3',                 'openai',    '^o3(-[0-9]{4}-[0-9]{2}-[0-9]{2})?$', 2.00,   8.00, 0.50,  '2025-06-10', NULL),
    ('o3-mini',            'openai',    '^o3-mini',                          1.10,   4.40, 0.55,  '2025-01-31', NULL),
    ('o4-mini',            'openai',    '^o4-mini',                          1.10,   4.40, 0.275, '2025-04-16', NULL),
    ('gpt-4-turbo',        'openai',    '^gpt-4-turbo',                     10.00,  30.00, NULL,  '2024-04-09', NULL),
    ('gpt-3.5-turbo',      'openai',    '^gpt-3\.5-turbo',                   0.50,   1.50, NULL,  '2024-01-25', NULL),
    ('text-embedding-3-small', 'openai', '^text-embedding-3-small',          0.02,   0.00, NULL,  '2024-01-25', NULL),
    ('text-embedding-3-large', 'openai', '^text-embedding-3-large',          0.13,   0.00, NULL,  '2024-01-25', NULL),
    -- Google
    ('gemini-2.5-pro',     'google',    '^(models/)?gemini-2\.5-pro',        1.25,  10.00, 0.31,  '2025-06-17', NULL),
    ('gemini-2.5-flash',   'google',    '^(models/)?gemini-2\.5-flash$|^(models/)?gemini-2\.5-flash-[0-9]', 0.30, 2.50, 0.075, '2025-06-17', NULL),
    ('gemini-2.5-flash-lite', 'google', '^(models/)?gemini-2\.5-flash-lite', 0.10,   0.40, 0.025, '2025-07-22', NULL),
    ('gemini-2.0-flash',   'google',    '^(models/)?gemini-2\.0-flash$|^(models/)?gemini-2\.0-flash-0', 0.10, 0.40, 0.025, '2025-02-05', NULL),
    ('gemini-2.0-flash-lite', 'google', '^(models/)?gemini-2\.0-flash-lite', 0.075, 0.30, NULL,  '2025-02-25', NULL),
    ('gemini-1.5-pro',     'google',    '^(models/)?gemini-1\.5-pro',        1.25,   5.00, 0.3125,'2024-10-01', NULL),
    ('gemini-1.5-flash',   'google',    '^(models/)?gemini-1\.5-flash',      0.075,  0.30, 0.01875,'2024-10-01', NULL);

-- Finds the price row for a model at a point in time (used by the writer and by reports).
CREATE FUNCTION pgtrail_price_for(p_model text, p_at timestamptz)
RETURNS SETOF pgtrail_model_price
LANGUAGE sql
STABLE
SET search_path FROM CURRENT
AS $fn$
    SELECT *
    FROM pgtrail_model_price AS p
    WHERE (p.model = p_model OR p_model ~* p.match_pattern)
      AND p.valid_from <= (p_at AT TIME ZONE 'UTC')::date
      AND (p.valid_to IS NULL OR (p_at AT TIME ZONE 'UTC')::date < p.valid_to)
    ORDER BY (p.model = p_model) DESC, length(p.model) DESC, p.valid_from DESC
    LIMIT 1
$fn$;
