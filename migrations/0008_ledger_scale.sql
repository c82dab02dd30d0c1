-- The decimal places the ledger keeps per currency (domain::Currency::scale; a test checks
-- they agree). Read models round sums to it, so a balance reads the same ("0.00", not "0")
-- however its events were batched.
CREATE FUNCTION ledger_scale(currency text) RETURNS integer
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT CASE currency WHEN 'EUR' THEN 2 WHEN 'USD' THEN 2 WHEN 'ETH' THEN 18 WHEN 'CARBON' THEN 3 END $$;
