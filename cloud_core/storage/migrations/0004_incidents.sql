-- Filled in by the port of its stores to the storage seam.
SELECT 1;
