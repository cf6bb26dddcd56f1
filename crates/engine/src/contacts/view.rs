//! A contact as the API and a data export show it: products by key, where the contact
//! holds them by number in the site's product dictionary.

use crate::contacts::contact::Contact;
use crate::items::Items;

/// The contact as JSON, its views, wishlist, cart and order lines naming product keys.
pub fn contact_json(contact: &Contact, items: &Items) -> serde_json::Value {
    let mut json = serde_json::to_value(contact).expect("contacts serialise");
    json["viewedProducts"] = (contact.viewed_products.iter())
        .map(|v| {
            // Copied out of the packed entry: the macro takes its values by reference.
            let (item, at) = (v.item, v.at);
            serde_json::json!({"key": items.key(item), "at": at})
        })
        .collect();
    json["wishlist"] = (contact.wishlist.iter())
        .map(|w| (items.key(w.item).to_string(), w.at.into()))
        .collect::<serde_json::Map<_, _>>()
        .into();
    if let Some(cart) = &contact.cart {
        let lines = cart.lines.iter();
        let lines = lines.map(|l| l.to_cart_line(items.key(l.item)));
        json["cart"]["lines"] =
            serde_json::to_value(lines.collect::<Vec<_>>()).expect("cart lines serialise");
    }
    for order in &contact.orders {
        let lines = order.lines.iter();
        let lines = lines.map(|l| l.to_order_line(items.key(l.item)));
        json["orders"][order.order_number()]["lines"] =
            serde_json::to_value(lines.collect::<Vec<_>>()).expect("order lines serialise");
    }
    json
}
