-- ResolveSender's last step (and ListIpAddresses' contains_ip filter) looks for the networks that
-- contain one client IP: `network >>= $1::inet`. The only index able to answer that was the GiST
-- index behind ip_addresses_no_cross_company_overlap, whose (network, company_id) keys make the
-- search visit dozens of pages: 0.5 to 3 ms per lookup with 10,000 networks
-- (services/policy/examples/resolve_bench.rs). An SP-GiST radix tree over the network answers it
-- in a handful of pages (about 0.05 ms). The exclusion constraint keeps its own index.
--
-- Not CONCURRENTLY: the table holds thousands of rows, not millions, so the build takes
-- milliseconds, and sqlx runs each migration in one transaction.
CREATE INDEX ip_addresses_network_spgist_idx ON ip_addresses USING spgist (network inet_ops);
COMMENT ON INDEX ip_addresses_network_spgist_idx IS
    'Serves `network >>= <client ip>` (longest-prefix lookup of ResolveSender, contains_ip of ListIpAddresses).';
