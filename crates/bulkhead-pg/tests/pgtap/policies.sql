-- pgTAP suite for the policies Bulkhead generates from the helpdesk test manifest.
-- Placeholders {{…}} are replaced with the provisioned role names by tests/it/pgtap.rs.
BEGIN;
SELECT plan(37);

-- Structure: every tenant table has exactly the four tenant policies (plus the cross-tenant
-- read policy where the manifest grants it), each for its command.
SELECT policies_are('public', 'ticket', ARRAY[
  'bulkhead_tenant_select', 'bulkhead_tenant_insert', 'bulkhead_tenant_update',
  'bulkhead_tenant_delete', 'bulkhead_cross_tenant_read']);
SELECT policies_are('public', 'customer', ARRAY[
  'bulkhead_tenant_select', 'bulkhead_tenant_insert', 'bulkhead_tenant_update',
  'bulkhead_tenant_delete']);
SELECT policies_are('t_s1', 'ticket', ARRAY[
  'bulkhead_tenant_select', 'bulkhead_tenant_insert', 'bulkhead_tenant_update',
  'bulkhead_tenant_delete', 'bulkhead_cross_tenant_read']);
SELECT policy_cmd_is('public', 'ticket', 'bulkhead_tenant_select', 'select', 'bulkhead_tenant_select is for SELECT');
SELECT policy_cmd_is('public', 'ticket', 'bulkhead_tenant_insert', 'insert', 'bulkhead_tenant_insert is for INSERT');
SELECT policy_cmd_is('public', 'ticket', 'bulkhead_tenant_update', 'update', 'bulkhead_tenant_update is for UPDATE');
SELECT policy_cmd_is('public', 'ticket', 'bulkhead_tenant_delete', 'delete', 'bulkhead_tenant_delete is for DELETE');
SELECT policy_cmd_is('public', 'ticket', 'bulkhead_cross_tenant_read', 'select', 'bulkhead_cross_tenant_read is for SELECT');
SELECT policy_roles_are('public', 'ticket', 'bulkhead_cross_tenant_read', ARRAY['{{cross_role}}']);
SELECT is((SELECT roles::text FROM pg_policies WHERE schemaname = 'public' AND tablename = 'ticket' AND policyname = 'bulkhead_tenant_select'), '{public}', 'tenant policies apply to every role');

-- RLS is enabled and forced (the owner is subject to it too).
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'public.ticket'::regclass), 'ticket: RLS forced');
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'public.customer'::regclass), 'customer: RLS forced');
SELECT ok((SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 't_s1.ticket'::regclass), 't_s1.ticket: RLS forced');
SELECT ok((SELECT NOT relrowsecurity FROM pg_class WHERE oid = 'public.country'::regclass), 'country is global: no tenant column, no RLS');

-- Policy expressions: the tenant setting, read with missing_ok, in USING and WITH CHECK.
SELECT matches((SELECT qual FROM pg_policies WHERE schemaname = 'public' AND tablename = 'ticket' AND policyname = 'bulkhead_tenant_select'),
  'current_setting\(''bulkhead\.tenant_id''::text, true\)', 'select USING reads the tenant setting');
SELECT matches((SELECT with_check FROM pg_policies WHERE schemaname = 'public' AND tablename = 'ticket' AND policyname = 'bulkhead_tenant_insert'),
  'current_setting\(''bulkhead\.tenant_id''::text, true\)', 'insert WITH CHECK reads the tenant setting');
SELECT matches((SELECT qual FROM pg_policies WHERE schemaname = 'public' AND tablename = 'ticket' AND policyname = 'bulkhead_tenant_update'),
  'current_setting', 'update USING');
SELECT matches((SELECT with_check FROM pg_policies WHERE schemaname = 'public' AND tablename = 'ticket' AND policyname = 'bulkhead_tenant_update'),
  'current_setting', 'update WITH CHECK');

-- Keys: tenant first, references composite.
SELECT col_is_pk('public', 'ticket', ARRAY['tenant_id', 'id'], 'ticket PK is (tenant_id, id)');
SELECT col_is_pk('public', 'customer', ARRAY['tenant_id', 'id'], 'customer PK is (tenant_id, id)');
SELECT fk_ok('public', 'ticket', ARRAY['tenant_id', 'customer'], 'public', 'customer', ARRAY['tenant_id', 'id']);
SELECT fk_ok('t_s1', 'ticket', ARRAY['tenant_id', 'customer'], 't_s1', 'customer', ARRAY['tenant_id', 'id']);
SELECT col_is_unique('public', 'customer', ARRAY['tenant_id', 'name'], 'unique led by tenant_id');

-- Ownership and privileges.
SELECT table_owner_is('public', 'ticket', '{{owner_role}}', 'the owner role owns tenant tables');
SELECT table_privs_are('public', 'ticket', '{{runtime_role}}', ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']);
SELECT table_privs_are('public', 'country', '{{runtime_role}}', ARRAY['SELECT']);
SELECT table_privs_are('public', 'ticket', '{{cross_role}}', ARRAY['SELECT']);
SELECT table_privs_are('public', 'customer', '{{cross_role}}', ARRAY[]::text[]);
SELECT table_privs_are('t_s1', 'ticket', '{{runtime_role}}', ARRAY[]::text[]);
SELECT table_privs_are('t_s1', 'ticket', '{{schema_role}}', ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']);
SELECT schema_privs_are('public', 'public', ARRAY[]::text[]);
SELECT database_privs_are(current_database(), 'public', ARRAY[]::text[]);
SELECT is((SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = '{{runtime_role}}'), false, 'runtime role: no BYPASSRLS, not superuser');
SELECT is((SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = '{{cross_role}}'), false, 'cross-tenant role: no BYPASSRLS, not superuser');

-- Behaviour, as the owner (FORCE makes RLS apply to it as well).
SET LOCAL ROLE {{owner_role}};
SELECT is_empty('SELECT 1 FROM public.ticket', 'no tenant set: no rows, even for the owner');
SELECT throws_ok($$INSERT INTO public.ticket (tenant_id, title) VALUES ('acme', 'x')$$, '42501', NULL, 'no tenant set: insert refused');
SELECT set_config('bulkhead.tenant_id', 'acme', true);
SELECT throws_ok($$INSERT INTO public.ticket (tenant_id, title) VALUES ('evil', 'x')$$, '42501', NULL, 'insert for another tenant refused');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
