// Creates the `airports` collection that sluice loads
// examples/data/airports.csv into, with one text field per CSV column.
//
// The `id` field keeps PocketBase's default: exactly 15 characters of
// [a-z0-9]. The CSV plugin derives such ids from each row's iata code
// (`id_field=id`), so a create repeated after a lost response fails with
// `validation_not_unique` instead of adding a second record. Values are not
// required, because a CSV field may be empty, and are kept as text, so a
// read-back returns exactly the strings that were sent.
//
// Every API rule is null, so only superusers may list, view, create, update
// or delete records.
migrate(
  (app) => {
    const text = (name) => ({ name, type: "text", required: false });
    const collection = new Collection({
      type: "base",
      name: "airports",
      listRule: null,
      viewRule: null,
      createRule: null,
      updateRule: null,
      deleteRule: null,
      fields: [
        {
          name: "id",
          type: "text",
          system: true,
          primaryKey: true,
          required: true,
          pattern: "^[a-z0-9]+$",
          min: 15,
          max: 15,
          autogeneratePattern: "[a-z0-9]{15}",
        },
        text("iata"),
        text("name"),
        text("city"),
        text("state"),
        text("country"),
        text("latitude"),
        text("longitude"),
      ],
    });
    app.save(collection);
  },
  (app) => {
    app.delete(app.findCollectionByNameOrId("airports"));
  },
);
